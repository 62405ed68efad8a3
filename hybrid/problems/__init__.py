"""The physics written once (SI units): the parameter table (``parameters``), closed forms
(``exact``, ``krogh``), the IFP model (``ifp``) and the drug-transport rate laws (``pharmacokinetics``,
``exchange``, ``release``, ``uptake``, ``radiation``, ``bioheat``), the latter evaluated alike by numpy,
torch and UFL through ``namespace``. Importing this package loads neither torch nor DOLFINx."""
