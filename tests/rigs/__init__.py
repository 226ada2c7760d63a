"""Test inputs and set-ups that several test folders share."""
