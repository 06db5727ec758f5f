"""``python -m preo_client.testing serve``: the same command as ``preo sandbox serve``."""

from __future__ import annotations

try:
    import click
except ImportError:  # pragma: no cover - exercised by hand without the extra
    raise SystemExit(
        "The sandbox command needs the 'cli' extra: pip install 'preo-client[cli]' (or serve "
        "from Python: preo_client.testing.serve())"
    ) from None

from ._serve_command import serve_command

__all__ = ["main"]

PROG = "python -m preo_client.testing"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The Preo sandbox (FakePreo) as a server (also: preo sandbox serve)."""


main.add_command(serve_command)

if __name__ == "__main__":
    main(prog_name=PROG)
