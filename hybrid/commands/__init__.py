"""One module per command of the ``hybrid`` command line: composition of the layers below
(configuration -> mesh -> solvers -> outputs), no physics of its own."""
