"""Alerts: rules and their conditions (``rules``, ``conditions``), the 1m price trail
a rule is checked along (``price_trail``), the engine that evaluates rules on market
facts (``engine``), the store of rules, alerts and engine state (``store``), delivery
to webhooks under the destination policy (``webhooks``, ``destinations``), and the
service that owns every write (``service``): routes call the service, which stores,
invalidates the cached lists and republishes the dashboards."""
