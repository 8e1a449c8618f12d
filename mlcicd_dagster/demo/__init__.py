"""Tools the demo and end-to-end tests use to play a user: land files, replay traffic."""
