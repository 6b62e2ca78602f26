"""The baselines the chat figures are compared with: a bare picows relay (the transport ceiling)
and a websockets + Redis pub/sub relay (what a Python team would build instead), plus the
generated devices that speak their wire formats."""
