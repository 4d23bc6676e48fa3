"""The SQLite backend of the zero-setup default: Django's, waiting for the write lock in short steps
(see base.py)."""
