"""The record: schema, migrations, session handling, cohort views and queries."""
