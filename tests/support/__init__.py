"""What the tests share, written once: free ports, the settings factory, the PostgreSQL
harness, the embedded stack fixture and the recordings. Import as
`from tests.support.settings import make_settings`."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
