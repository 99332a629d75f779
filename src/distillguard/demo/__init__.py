"""`distillguard demo`: the whole defence on a simulated day (run.py), with its report.

`cast` picks the population, `replay` sends it through the gateway on a compressed clock,
`synthetic` answers the bulk of it, `student` trains what a distiller trains, `report`
writes the page. Imports reach every layer below: this is the top of the package.
"""
