"""`python -m anomaly.reproduce table=<name> [budget=paper|reduced|smoke] [overrides]`: a published
table's grid, trained once per training group and scored once per image, one results.json per
cell with the command that makes it again, printed next to the paper's numbers.

`tables` holds the tables as data (conf/table/), `runner` runs their cells.
"""
