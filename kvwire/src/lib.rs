//! KVWire: the KV-cache wire format (v1 reference-exact, v2 streaming frames). Pure, synchronous.
