"""Signal exchange between providers: STIX 2.1 objects over a TAXII 2.1 hub, with
identifiers shared only as keyed hashes and templates only as keyed MinHash sketches."""
