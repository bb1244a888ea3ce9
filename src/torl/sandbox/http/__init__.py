"""The HTTP wing: `torl sandbox serve` (server.py, SandboxFusion's `/run_code` API over any `Sandbox`)
and `RemoteSandbox` (remote.py, its client). Code outside `torl.sandbox` gets the client from
`make_sandbox(url=...)`, not from here.

Nothing is imported eagerly: the server needs fastapi/uvicorn, the client httpx.
"""
