"""The exchange hub: a TAXII 2.1 server that members publish STIX objects to and read
from, with per-member tokens and rights, TLP 2.0 enforcement and an audit log."""
