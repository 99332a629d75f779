"""Suspect tests: did another model learn from our watermarked outputs, and whose?"""
