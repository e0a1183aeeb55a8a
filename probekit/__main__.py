"""``python -m probekit``: the same command line as the ``probekit`` script."""

from probekit.cli import app

if __name__ == "__main__":
    app(prog_name="probekit")
