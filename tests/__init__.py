"""The tests, in tiers: unit/ and tui/ need no service beyond a throw-away PostgreSQL
(the fast lane), stack/ boots the embedded stack, superset/ a real Superset, compose/
a Docker Engine. support/ holds what they share."""
