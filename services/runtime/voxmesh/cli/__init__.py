"""The ``voxmesh`` command line: ``up``, ``call``, ``models``."""
