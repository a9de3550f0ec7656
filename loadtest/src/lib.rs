//! Load and soak generator against running sharer/receiver services.
