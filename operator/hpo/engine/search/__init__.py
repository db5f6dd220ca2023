"""Search strategies behind one seam: what the narrow stage proposes next.

A strategy never holds state a restart could lose: it proposes from what is
recorded and planned, with a random generator seeded from the study's seed and
how many configurations were planned before, so a resumed study decides alike.
"""
