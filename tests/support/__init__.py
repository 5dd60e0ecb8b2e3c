"""What the tests share, written once: free ports, the settings factory and the PostgreSQL
harness. Import as `from support.settings import make_settings` (pytest puts tests/ on
sys.path)."""
