"""Fault injection on real servers: workers killed, Redis and PostgreSQL restarted, the results store failing,
lost messages, a poison study and a double submit. Each scenario ends, with nobody watching, with every study done
or failed with a reason and one row per key in the record."""
