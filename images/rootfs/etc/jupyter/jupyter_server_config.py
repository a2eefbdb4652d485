"""JupyterLab settings of the `jupyter` service (system-wide, so a user's ~/.jupyter can still refine them).

Safe by default: a token is always required (serve-jupyter makes one when JUPYTER_TOKEN is unset), no
password can be set from the browser, and compose publishes the port on 127.0.0.1 only.
"""

c = get_config()  # noqa: F821  (injected by Jupyter when it loads this file)

c.ServerApp.ip = "0.0.0.0"  # inside the container; reachable from the host only through the published port
c.ServerApp.port = 8888
c.ServerApp.port_retries = 0  # fail loudly instead of moving to a port compose does not publish
c.ServerApp.root_dir = "/workspace"
c.ServerApp.open_browser = False
c.PasswordIdentityProvider.hashed_password = ""
c.PasswordIdentityProvider.allow_password_change = False
c.ServerApp.terminado_settings = {"shell_command": ["/bin/bash"]}
# Kernels get this long to exit on shutdown, so `docker compose stop` ends well inside its 10 s grace period.
c.KernelManager.shutdown_wait_time = 3.0
