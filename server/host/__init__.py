"""The stages this node hosts: one owner each, and the sinks its events go to."""
