import sys

from app.main.cli import main

sys.exit(main())
