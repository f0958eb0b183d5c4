"""The debugging lab: record traffic as HAR, replay it deterministically through a
plugin, compare two versions (A/B), canned callout answers (mocks), and a session
exported as a pytest file. Pure host code: no Qt, no network in a replay."""
