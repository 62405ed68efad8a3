"""Physical-group tags shared by every mesh builder (the one table; meshes/README.md repeats it).

| tag | name              | entity | where                                                   |
|-----|-------------------|--------|---------------------------------------------------------|
| 1   | tumour            | cells  | tumour tissue (perivascular meshes: all tissue)          |
| 2   | host              | cells  | host (normal) tissue shell around the tumour            |
| 11  | tumour_surface    | facets | tumour/host interface, or the outer surface if no host  |
| 12  | outer_boundary    | facets | outer boundary of the host shell, Krogh tissue cylinder |
|     |                   |        | or tissue patch                                         |
| 21  | vessel_wall       | facets | Krogh vessel wall                                       |
| 101+i | vessel_wall_i   | facets | wall of vessel i (0-based) in a multi-vessel patch      |
"""

TUMOUR = 1
HOST = 2
TUMOUR_SURFACE = 11
OUTER_BOUNDARY = 12
VESSEL_WALL = 21
FIRST_PATCH_VESSEL_WALL = 101

CELL_NAMES = {TUMOUR: "tumour", HOST: "host"}


def patch_vessel_wall(index: int) -> int:
    """Facet tag of the wall of vessel ``index`` (0-based) in a multi-vessel patch."""
    return FIRST_PATCH_VESSEL_WALL + index
