"""Plain typed records of the provisioning domain and their validation rules.

Everything here is stdlib-only and free of I/O: the engine, the store, the transports and the
APIs all speak in these records, and wire shapes (camelCase JSON) live in the renderers.
"""
