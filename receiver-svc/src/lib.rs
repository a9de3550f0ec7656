//! Receiver service: pulls KVWire from a sharer, projects and fuses, scores or generates, asks for round 2.
