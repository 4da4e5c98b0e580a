"""The core under the public objects: devices, the one lifetime holder, the one reader of array
interfaces, the configuration. Imports only ``errors`` and ``backends``."""
