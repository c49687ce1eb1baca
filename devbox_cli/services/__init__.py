"""The use cases: one service per resource (secrets, gateways, policies, devboxes), the one
component that opens secrets into a proxy config (proxy_config.py) and the one that pushes
configs to running proxies (proxy_push.py). Client (client.py) composes them."""
