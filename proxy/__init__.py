"""The devbox companion proxy: Agent Gateway routes plus the policy-enforcing egress proxy.

It never imports devbox_cli or docker; its image needs only aiohttp.
"""
