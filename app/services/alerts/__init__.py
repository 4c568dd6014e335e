"""Alerts: rules and their conditions (``rules``, ``conditions``), the 1m price trail
a rule is checked along (``price_trail``), the engine that evaluates rules on market
facts (``engine``), the store of rules, alerts and engine state (``store``), the
outbound destination policy every delivery passes (``destinations``), the service
that owns every write a route asks for and delivers alerts (``service``): routes call
the service, which stores, invalidates the cached lists and republishes the dashboards;
and the evaluation of the rules on each snapshot and its analysis (``evaluation``, where
the snapshots are made), which stores what fires and has the service deliver it;
notification channels, stored Apprise URLs rules name (``channels``, ``channel_store``,
``channel_service``), and the one sender to them (``apprise_sender``, its log masking
in ``apprise_logs``; Apprise loads on first use); the delivery outbox (``outbox``:
enqueue and status, ``delivery`` the record, ``outbox_store``/``outbox_file`` where
deliveries wait, ``outbox_worker`` the sending loop with retries and breakers,
``webhook_channel`` a rule's webhook as an Apprise ``json://`` destination,
``delivery_errors``). All but ``evaluation`` and ``price_trail`` load without the
analytics (a serving process)."""
