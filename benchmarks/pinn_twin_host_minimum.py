"""Does the tumour-in-host inverse PINN hold the truth when its networks start at the FEM truth? (issue 9)

On the tumour-in-host twin (benchmarks/pinn_twin_host.toml) every coupled-PINN inversion drifts the
unknowns far from the truth, also when they start AT the truth with untrained networks
(``pinn_twin_host_staged_start_at_truth.json``: k_rel -55 %, K_tumour +2.5 %, p_e -38 % after
1500 Adam steps). On the 2-D release twin the same kind of drift was a path problem: networks
regressed onto the FEM truth held the law at a 43 % lower loss (pinn_release_minimum.py). This
script makes that check on the host twin: either the truth with fitted networks is a lower,
stable point of the same loss (the drift is the path from untrained networks), or the fitted
state too leaves the truth (the loss's minimum for these networks is not at the truth).

Pre-registration (written and committed before any real run):

- Stage ``fit`` (float64, unknowns held at the truth): the FEM truth of the twin (``hybrid
  synthesize``'s FEM, as pinn_twin_host.py); the problem of pinn_twin_host.build_problem with the
  staged run's networks (width 64, sigma 1, tanh(phi / 0.05) drug input, the pressure on its own
  4096 points, seed 0); the pressure network fitted as pinn_twin_host_diagnosis.pressure_check
  (300 Adam + 300 L-BFGS on its own 4096 points, residual and interface terms only); the drug
  network fitted to the FEM liposomal / free / cell drug at every mesh node every 600 s as
  pinn_twin_host_diagnosis.supervised_fit with 9000 Adam steps (4096 nodes a step; measured
  3.1 / 2.9 / 3.5 % in pinn_twin_host_split.json). The aim is <= 5 % relative L2 per species; if
  the fit misses it the runs go on and the miss is reported. The fitted state is saved
  (torch.save) in $HOST_MINIMUM_DIR (default /tmp/pinn_twin_host_minimum) as fit.pt.
- Stage ``truth_start``: the fitted state, the unknowns (k_rel, K_tumour, p_e,tumour) at the
  truth, then the coupled inversion with the training of the staged start-at-truth run except
  the hold: 512 collocation points (RAD every 100 steps), the pressure on its own 4096 points,
  balance "all", network learning rate 1e-3, unknown learning rate 3e-3, float32, seed 0, one
  torch thread; unknowns released at once (``unknowns_from_step`` 0: the networks are already
  fitted); 1500 Adam steps (the drifted run's budget) then 100 L-BFGS iterations on the last
  points and weights. Recorded every 100 Adam steps and every 25 L-BFGS iterations: the
  estimates, the UNWEIGHTED loss terms and the balance weights (Trainer history).
- Stage ``drift``: the drifted run re-made in this process for a like-for-like comparison (its
  networks were not saved): pinn_twin_host.py ``--start-at-truth --adam 1500 --lbfgs 0 --points
  512 --threads 1 --flow-points 4096 --interface-width 0.05 --pretrain-adam 200 --pretrain-lbfgs
  100 --unknowns-from-step 400 --balance all --unknown-lr 3e-3`` (float32, seed 0), i.e. the
  training of pinn_twin_host_staged_start_at_truth.json; its final estimates are checked against
  that JSON (reported; if they differ the re-made run is the one compared).
- Stage ``compare`` (float64): every unweighted loss term (pde_lipo, pde_free, pde_cell, pde_ifp,
  interface_ifp, bc_no_flux, data_total_drug, data_released_fraction) of these states on ONE set
  of evaluation points (4096 uniform drug points in space-time and 4096 uniform flow points, seed
  2026; the data and boundary terms use their fixed points): A the truth-start final state, B the
  re-made drifted final state, C A's networks at B's unknowns, D B's networks at the true
  unknowns, E the fitted state before training. Sums: data (the two data terms), physics (the six
  others), total. Field errors of A, B, E against the FEM truth: pressure relative L2 at the mesh
  nodes, liposomal / free / cell drug relative L2 at every node every 600 s (vector norms, as
  the diagnosis).
- Decision rule (A's final record, after L-BFGS): "holds" if every unknown is within 5 % of its
  truth; "drifts" if any leaves by more than 20 %; else "mixed". Conclusion: "path problem" if
  it holds AND A's total unweighted loss is below B's (the truth with fitted networks is a lower
  point that the descent from untrained networks misses); "the loss's minimum is not at the
  truth" if it drifts; anything else "mixed", described.

Outcome (benchmarks/results/pinn_twin_host_minimum.json; 2-core box shared with other helpers,
one process, one torch thread, 1-min load 2.5-3.4): by the rule **"drifts"**, so "the loss's minimum
is not at the truth" — even from networks fitted to the FEM truth the unknowns leave it:

    state (float64, evaluation points)   k_rel    K_T      p_e      total    data      physics  pressure  drug L/F/I %
    E fitted start (truth)               0        0        0        1.423    2.57e-3   1.420    0.28 %    3.1/2.9/3.5
    A truth_start final                  -16.6 %  +0.6 %   -23.2 %  0.385    4.54e-4   0.384    22.3 %    12/25/19
    B drift (re-made) final              -69.2 %  +1.6 %   -38.6 %  0.412    6.29e-3   0.406    37.3 %    30/75/36
    C A's networks at B's unknowns                                  0.698    4.54e-4   0.698
    D B's networks at the true unknowns                             6.387    6.29e-3   6.381
    (relative errors; unweighted sums; pressure / drug: relative L2 against the FEM truth at the
    nodes, drug at every node every 600 s)

A's terms: pde_lipo 0.381, pde_free 2.5e-3, pde_cell 3.3e-4, pde_ifp 2.8e-4, interface 2.4e-6,
bc 1.6e-5, data total drug 3.59e-4, released fraction 9.4e-5 (E: 1.21, 1.2e-2, 7e-5, 6.9e-4,
1.6e-5, 0.194, 2.25e-3, 3.2e-4; B: 0.403, 3.3e-4, 1.2e-3, 8.8e-4, 3.5e-6, 4.7e-6, 5.87e-3,
4.25e-4). The fit: pressure 0.28 % (2.2-2.7 Pa RMS, 48 s), drug 3.1 / 2.9 / 3.5 % (9000 Adam,
244 s; liposomal residual of the fit 5.4 in the margin band against 0.03 / 0.007 in tumour / host).
Truth start (150 s, 1500 Adam + 100 L-BFGS): p_e falls from the first records on (1486 Pa at step
100, 1410 at 300, 1299 at 700, 1212 at 1100, 1168 at 1500, 1177 after L-BFGS), k_rel to -9 % by
step 500 and -16 % by 1100, then flat; K_T stays within 0.7 %. Unlike the release twin, the
truth with FEM-fitted networks is NOT a low point of this loss: E's total is 3.5x B's (its
liposomal residual in the margin and the no-flux term the supervised fit does not enforce), and
the descent from E lowers it 3.7x while taking p_e and k_rel away. A ends 7 % below B in total
(data 14x lower, physics 5 % lower) and much nearer the truth, so the start matters too, but
neither is at the truth. The re-made drift run (176 s) matches the stored
pinn_twin_host_staged_start_at_truth.json through the hold (pressure pre-training bit for bit,
loss within 3e-5 relative at step 400) and then diverges: k_rel -69 % against -55 %, K_T +1.6 %
against +2.5 %, p_e -38.6 % against -37.9 %: the released trajectory is sensitive to round-off at
the 30 % level in k_rel. Networks and unknowns co-adapt: each set of networks is far worse at the
other's unknowns (C 1.8x A, D 15x B). Total drug data: A ends at 0.14x its noise floor
(noise^2 = 2.5e-3 nondimensional; E 0.9x, B 2.3x): balance "all" weights the data ~560 / 330 against
pde_lipo 0.31 at the end, so A fits the noise (648 voxel values a series, 17,155 drug parameters).

Post hoc (written after the pre-registered stages had run and been read, committed before these
runs): the truth-start run ended at k_rel -17 %, p_e -23 % with its data terms 7x below the total
drug's noise floor (balance "all" gave the data weights ~560 / 330 against pde_lipo's 0.31).
Two questions:

- Stage ``frozen``: where do the PDE terms alone put the unknowns for fixed networks? The networks
  of E (fitted) and of A (truth-start final) frozen, the three unknowns alone minimise the sum of
  the unweighted non-data terms (the data terms do not depend on them then) on the evaluation
  points, L-BFGS (strong Wolfe) for 40 iterations from each state's own unknowns. Reported: the
  minimiser and its terms. No rule: a description of the bias the networks' residuals impose.
- Stage ``residuals``: ``truth_start`` with balance "residuals" (data weight 1, the library's
  default) instead of "all"; the same rule (holds / drifts / mixed at 5 % / 20 %), its unweighted
  terms on the evaluation points against A and B, and its field errors.

Post-hoc outcome (one torch thread, load 3.0-3.2): ``frozen`` (19 s): with E's networks the
non-data terms alone move the unknowns to k_rel -14.5 %, K_T -2.9 %, p_e -1.4 % and lower their
sum by only 0.7 % (1.420 -> 1.411): the fitted networks' residual pulls k_rel, hardly p_e, so the
p_e drift of the truth start comes from the networks and unknowns moving together; with A's
networks p_e stays at -22.5 % and k_rel goes to -39 %. ``residuals`` (176 s): **drifts** further
without the data up-weighting — k_rel -43.9 %, K_T +4.0 %, p_e -28.0 %; pressure 26.9 %, drug
32 / 60 / 59 %; total drug data 1.12e-2 (4.5x its noise floor: underfitted, not overfitted); the
unweighted total 0.122 (pde_lipo 0.106, data 1.55e-2) is the lowest of all states measured, at
unknowns further from the truth. Noise fitting is therefore not what moves the unknowns: the
lowest values of this loss that Adam + L-BFGS reach lie away from the truth whatever the data
weights.

Second post hoc (this session, after the stages above; written and committed before these runs):
the margin band's liposomal residual (strong form: 5.4 mean square in the band for the fitted
networks, 0.03 elsewhere) is the term that does not vanish at the truth. The weak residual form
now takes advection by parts (hybrid/inverse/weak.py: only the networks' values and the Darcy
flux enter, no derivative of C or of u, and the networks' kink on the interface is integrated
rather than missed). Does the truth become a low, stable point of the weak loss?

- Stage ``weak_terms`` (no training): the weak PDE terms of E (fitted networks, unknowns at the
  truth) with the default test functions (12 cells per space axis, 12 in time, 3 Gauss points)
  and, as a quadrature check, with each cell split in 2 per axis and with 16 cells; against E's
  strong terms (pde_lipo 1.21).
- Stage ``frozen_weak``: as ``frozen`` (E's networks frozen, L-BFGS 40 iterations on the three
  unknowns from the truth) with the weak drug terms (defaults) plus the flow's and boundary terms.
  Strong form for comparison: k_rel -14.5 %, K_T -2.9 %, p_e -1.4 %.
- Stage ``truth_start_weak``: ``truth_start`` (E, unknowns released at once, 1500 Adam + 100
  L-BFGS, balance "all", float32, seed 0, one thread) with ``residual_form = "weak"`` (defaults;
  the pressure stays pointwise on its 4096 points); same rule (holds / drifts / mixed at 5 % /
  20 %) and its field errors. Compared with A (strong: k_rel -16.6 %, K_T +0.6 %, p_e -23.2 %):
  "weak helps" if every unknown ends closer to its truth than A's, "weak hurts" if every one ends
  further, else "no clear change". Only if it holds is a full inversion from the staged run's
  start with the weak form worth its 15-20 minutes (pinn_twin_host.py ``--residual-form weak``).

Second post-hoc outcome (one torch thread, load 1.4-2.5): ``weak_terms`` (4 s): E's weak
pde_lipo 0.0103 against its strong 1.21 (x118 lower); the quadrature moves it (each cell split in
2: 0.0028; 16 cells: 0.0090), pde_free 2.0e-5 (strong 1.2e-2); E's non-data terms are now
dominated by the no-flux term (0.194). ``frozen_weak`` (6 s): with E's networks frozen the weak
terms alone put the unknowns at k_rel +1.9 %, K_T +0.04 %, p_e -0.5 % (strong: -14.5 %, -2.9 %,
-1.4 %). ``truth_start_weak`` (256 s): **"mixed"** by the rule and **"weak helps"**: k_rel -1.0 %,
K_T +0.6 %, p_e -9.9 % (A: -16.6 %, +0.6 %, -23.2 %); p_e still falling at the end (1445 Pa after
Adam, 1382 after L-BFGS, truth 1533); pressure 9.7 %, drug 12.6 / 14.5 / 16.3 % from the FEM
truth; the total-drug data term 6.4e-4, 0.26x its noise floor (balance "all" fits the noise).

Third post hoc (written after reading the second, committed before its runs):
- Stage ``truth_start_weak_residuals``: ``truth_start_weak`` with balance "residuals" (data weight
  1) instead of "all": does p_e hold without the data up-weighting that fits the noise? Same rule
  and comparison, now against ``truth_start_weak``.
- Not by the rule above (the truth start was "mixed", not "holds"), measured anyway because the
  weak form more than halved every drift: the full inversion from the staged run's start, the
  staged run's settings with only the residual form changed (pinn_twin_host.py ``--residual-form
  weak --adam 3000 --lbfgs 100 --points 512 --threads 1 --flow-points 4096 --interface-width 0.05
  --pretrain-adam 200 --pretrain-lbfgs 100 --unknowns-from-step 400 --balance all --unknown-lr
  3e-3`` -> ``pinn_twin_host_staged_weak.json``), judged by the issue's targets; the strong staged
  run missed every one (k_rel -96 %, K_T -65 %, p_e -37 %).

Third post-hoc outcome (one torch thread each, two runs at once, load 1-2.5):
``truth_start_weak_residuals`` (266 s): **"mixed"**, compared with ``truth_start_weak`` "weak
hurts" (k_rel -1.8 %, K_T +1.4 %, p_e -11.2 %; pressure 10.9 %, drug 10.3 / 11.7 / 12.5 %; total-drug
data 2.05e-3, 0.82x its floor): p_e drifts as far without the data up-weighting, so noise fitting
does not drive it. The full staged inversion with the weak form (``pinn_twin_host_staged_weak.json``,
519 s training): **every target missed** as with the strong form — k_rel -90 %, K_T -64 %, p_e -33 %;
pressure 32 %, total drug 36-47 %. Its final unweighted terms sum to 8x those of the truth-start run
(0.025 against 0.0030; pde_lipo 2.0e-2 against 1.9e-3, total-drug data 1.7e-3 against 6.4e-4; only
the three smallest terms, free drug, interface and no-flux, are lower): with the weak form the
neighbourhood of the truth is the lower basin, and the descent from untrained networks at a
distant start does not reach it (a path problem now, where the strong form's truth was not a low
point at all).

Fourth post hoc (written after reading the third, committed before its runs):
- Stage ``warm_weak``: a FEM warm start at the staged run's start values (k_rel 1e-5 1/s, K_T
  1e-14 m^2/(Pa s), p_e 2500 Pa; pinn_twin_host.UNKNOWNS): the FEM forward solve there, the
  pressure network trained on its own equation at those values (as ``fit``: 300 Adam + 300
  L-BFGS, 4096 points), the drug network fitted to that FEM's nodal fields (9000 Adam, as
  ``fit``), then the weak-form training of ``truth_start_weak`` (balance "all", unknowns released
  at once) with the staged run's budget, 3000 Adam + 100 L-BFGS. Rule on the final unknowns:
  "holds" (every one within 5 % of the truth), "drifts" (any beyond 20 %), else "mixed"; also the
  field errors against the FEM truth and the fit + training time against the issue's 15 minutes.
  "holds" would make a FEM warm start of kind "coupled" in ``hybrid invert`` worth building.
- Stage ``truth_start_weak_gauss4``: ``truth_start_weak`` with 4 Gauss points per cell axis
  instead of 3 (E's weak pde_lipo moved from 0.0103 to 0.0028 with a finer rule: is the p_e drift
  the quadrature's?); compared with ``truth_start_weak`` by the same comparison.

Fourth post-hoc outcome (one torch thread each, both at once, load 1.3-2.3): ``warm_weak`` (754 s:
FEM + fits 265 s, training 488 s; 12.6 minutes in all): **"drifts"** — k_rel -5.6 %, K_T -66 %,
p_e +9.5 %; pressure 9.7 %, drug 19 / 20 / 20 % from the FEM truth. The warm start (pressure 0.55 %
from its FEM, drug 3.2 / 2.8 / 3.6 %) takes k_rel from 1e-5 to within 6 % in 400 steps and p_e
down from 2500 Pa (1731 Pa after Adam, 1680 after L-BFGS, still falling); K_T does not move
(1.00e-14 -> 1.05e-14 against 3.1e-14): with the networks free the loss is nearly flat along K_T
(the pressure network re-solves for any K_T; the Cramer-Rao bound of 2.8 % is for exact FEM
fields). From untrained networks at the same start (pinn_twin_host_staged_weak.json) it was
k_rel -90 %, K_T -64 %, p_e -33 %. ``truth_start_weak_gauss4`` (582 s, 2.3x the 3-point run):
"mixed", "no clear change" by the comparison — k_rel -1.8 %, K_T -0.6 %, p_e -5.6 % (3 points:
-1.0 %, +0.6 %, -9.9 %); pressure 5.5 %, drug 9.3 / 9.9 / 13.0 %: the finer rule halves the p_e
drift, so part of it is quadrature error. (Its JSON entry is taken from its log: warm_weak, run
beside it, rewrote the file it had read before this stage ended.)

Fifth post hoc (written after reading the fourth, committed before its runs). Why does K_T not
move? The FEM Fisher information along ln K_T (1.2e3 in noise units, pinn_twin_host_staged_weak.json)
says the images at K_T = 1e-14 with the other two at the truth misfit by ~2.2x the noise floor, yet
warm_weak ends with its total-drug data term at 1.05x the floor while its weak liposomal term is
3.4x the truth-start run's (6.6e-3 against 1.9e-3): balance "all" up-weights the data (weights of
hundreds), so the networks fit the images by leaving the PDE instead of moving K_T. Hypothesis:
with the PDE weighted above the data the networks stay near the PDE's solutions and only the
unknowns can fit the images.
- Stage ``warm_weak_w10`` and ``warm_weak_w100``: ``warm_weak``'s training from its saved warm
  state (warm.pt; same FEM warm start, not re-fitted) with balance "none" and a fixed residual
  weight 10 or 100 (data weight 1), 3000 Adam + 100 L-BFGS, weak form (3 points), both at once.
  Rule as before (holds / drifts / mixed); "K_T moves" if its final error is below 50 % in size
  (warm_weak: -66 %, i.e. unmoved from 1e-14).

Fifth post-hoc outcome (both at once beside a CI run, load 1.3-2.9, 820-830 s each): the
hypothesis is **refuted**. K_T does not move with either weight (W = 10: -65.6 %, W = 100: -65.9 %;
"drifts"): the networks do stay near the PDE's solutions (weak liposomal term 1.5e-4 / 1.3e-4
against warm_weak's 6.6e-3), but the unknowns then hardly move at all: p_e ends at +45 % / +52 %
(2227 / 2332 Pa from 2500; warm_weak +9.5 %), k_rel at +7.8 % / -20 %, and the images stay
unfitted (total-drug data 6.2e-3 / 2.1e-2, 2.5x / 8.4x the floor); pressure 44 % / 49 %, drug
26-40 % / 33-49 %. Keeping the networks on the PDE slows the unknowns as it did on the pH-release
twin (pinn_release_warmstart.py); it does not let the images move K_T within this budget.

Sixth post hoc (written after reading the fifth, committed before its runs): is the PINN's loss
itself flat along K_T, or only the joint descent stuck? A profile: K_T held at 1.0e-14, 1.8e-14,
3.1e-14 (the truth) and 5.4e-14 m^2/(Pa s), k_rel and p_e held at the truth, networks started
from the warm state (fitted to the FEM at the staged start values, so biased towards 1e-14),
then 1000 Adam + 50 L-BFGS on the networks alone (weak form, 3 points, balance "none": one fixed
objective for every point), two points per process (stages ``profile_a``: 1.0e-14 and 3.1e-14,
``profile_b``: 1.8e-14 and 5.4e-14), both at once. Reported per point: the unweighted terms on
the evaluation points. Decision on the summed unweighted terms: "identified by the loss" if the
lowest is at 3.1e-14 and the one at 1.0e-14 is more than 10 % above it (then the failure is the
joint descent); "flat" if all four lie within 10 % of each other; else "mixed".

Sixth post-hoc outcome (two processes at once, load 0.9-2.0, 163-172 s per point): **"mixed"** by
the rule — the summed terms rise with K_T (1.0e-14: 4.86e-3, 1.8e-14: 5.63e-3, 3.1e-14: 7.31e-3,
5.4e-14: 9.78e-3), lowest at the start's K_T, not the truth's. The rise is the pressure terms
(pde_ifp 2.0e-3 -> 6.2e-3: the pressure network, fitted at 1e-14, has not re-converged in 1050
steps); the image terms are flat (total drug 1.92-2.01e-3, 4 % apart, lowest at 1.0e-14), where
the FEM's Fisher information says K_T = 1e-14 would misfit by ~2.2x the floor: with weak PDE terms
of 5-9e-4 the networks fit the images equally at every K_T. So at this budget the PINN's loss
does not identify K_T; the Cramer-Rao 2.8 % applies to exact FEM fields only.

Seventh post hoc (written after reading the sixth, committed before its runs). The sixth profile
started every point from networks fitted at K_T = 1e-14, so its pressure network had not
re-converged away from there, and its drug networks fitted the images below their noise floor
(total drug 1.92-2.01e-3, floor about 2.5e-3) at every K_T while their weak liposomal term stayed
at 5-9e-4, below the 1.03e-2 of networks fitted to the FEM truth (E): the weak terms do not hold
the networks to the FEM's fields. A guess at why: the test functions span two cells of 1/6 of the
domain's width (0.67 mm here), wider than the tumour's pressure rim through which K_T acts, so
sub-cell changes of the drug fields are not seen. Stages ``profile_fem_a`` (K_T 1.0e-14 and
3.1e-14) and ``profile_fem_b`` (1.8e-14 and 5.4e-14), both at once, one torch thread each:
- at each K_T, k_rel and p_e at the truth, the ``fit`` stage's FEM warm start at those values
  (FEM solve, pressure network 300 Adam + 300 L-BFGS on its own equation, drug network 9000 Adam
  on the FEM's nodal fields), so that no point starts from another point's fields;
- from that state, the sixth stage's training (1000 Adam + 50 L-BFGS on the networks alone,
  balance "none", K_T, k_rel, p_e held), once with the default 12 test-function cells per axis
  and once with 24 (0.33 mm supports; time cells and Gauss points unchanged);
- reported per point and cell count: the unweighted terms (that count's weak form) of the fitted
  state before training and of the trained state.
Decision per cell count (stage ``profile_fem_verdict`` once both have run), on the trained
states' summed unweighted terms, as in the sixth: "identified by the loss" if the lowest is at
3.1e-14 and the one at 1.0e-14 is more than 10 % above it; "flat" if all four lie within 10 % of
each other; else "mixed"; the same rule on the image terms alone, reported beside it. Reading:
"identified" at 12 cells would put the sixth's flatness on its biased start; "identified" at 24
and not at 12 would support finer test functions near the rim; "flat" at both would leave K_T
unseen by this PINN's loss at this budget.

Seventh post-hoc outcome (both at once beside other work, 1-min load 2-4; each point: FEM warm start
1-3 min, 12 cells 2.7 min, 24 cells about 16 min): **"identified by the loss"** at both cell counts.
Summed unweighted terms after training (12 cells / 24 cells, x 1e-3): K_T 1.0e-14: 4.34 / 4.69,
1.8e-14: 3.65 / 3.94, 3.1e-14 (truth): 3.25 / 3.68, 5.4e-14: 3.44 / 4.03, lowest at the truth with
1.0e-14 33 % / 28 % above. The image terms alone are "flat" by the rule (spread 9.4 % / 8.1 %): at 12
cells lowest at the truth and 5.4e-14 alike (1.951 / 1.952e-3), at 24 cells lowest at the truth and
rising on both sides (+2.3 % at 1.8e-14, +4.2 % at 5.4e-14, +8.1 % at 1.0e-14). Most of the summed
difference is the pressure residual (pde_ifp 1.55e-3 at 1.0e-14 against 0.84e-3 at the truth, 12
cells) and the liposomal residual (5.6e-4 against 3.9e-4). So the sixth stage's flat profile came
from its start fitted at 1e-14: networks fitted at each K_T leave the PINN's loss lowest at the true
K_T, and warm_weak's K_T, stuck at the start, is the joint descent's failure (a path problem), as
for k_rel and p_e from untrained networks. Finer test functions sharpen the image terms' minimum
but do not change the verdict.

Eighth post hoc (written after pinn_twin_host.py's parametric-pressure runs, committed before its
run). There, a parametric pressure network (pre-trained over the box of K_T and p_e, then fixed)
let K_T leave its start and cross the truth, while k_rel and p_e stayed low with untrained drug
networks; here, ``warm_weak``'s FEM warm start took k_rel to -5.6 % and p_e to +9.5 % while K_T
stayed stuck. Stage ``warm_parametric``: both at once. The problem with a parametric pressure at
the staged start values (1e-5 1/s, 1e-14 m^2/(Pa s), 2500 Pa), its pressure pre-trained alone
(2000 Adam + 500 L-BFGS on 4096 points, float32, as pinn_twin_host.py), the drug network fitted to
the FEM at the start values (9000 Adam, as ``warm_weak``), then ``warm_weak``'s training (weak
form, balance "all", unknowns released at once, 3000 Adam + 100 L-BFGS). Prediction: "mixed" or
"holds": K_T moves to within 20 % and k_rel and p_e stay within 10 %. The same rule and field
errors as ``warm_weak``, and the time of the whole (pre-training, FEM, fit, training) against the
issue's 15 minutes.

Eighth post-hoc outcome (one thread, beside a CI run, load 1.1-2.4; 580 s in all: pre-training
76 s, FEM + fit 166 s (fit 2.7 / 2.3 / 2.6 %), training 339 s): **"drifts"**, the prediction half
met. K_T +2.2 % (warm_weak: stuck at -66 %), but k_rel -72 % and p_e -26 % (warm_weak: -5.6 %,
+9.5 %); pressure 25 %, drug 23 / 76 / 75 % from the FEM truth. k_rel rose from 1e-5 to 1.9e-5 by
step 1500 and fell back; p_e fell from 2500 to 1250 Pa within 1200 steps, as in every run with the
parametric pressure. At the end the residual terms are small (weak liposomal 5.4e-4) and the
released-fraction misfit is 1.3e-2, about 10x that of the other runs: the networks follow the
equations at the wrong k_rel and p_e instead of the images.

Ninth post hoc (written after reading the eighth run's history, committed before its run). In
``warm_parametric`` the balancing weights the free-drug residual 750x at step 100 and 4e4x at the
end (``warm_weak``: 1.8x, 1.2e3x), against about 1 for the liposomal one, because the networks
fitted to the FEM at the start satisfy the free-drug equation (its term 1.4e-6 at step 100) and
balancing weights a term by the inverse of its gradient norm; the free-drug equation holds k_rel
C_L, so its inflated weight holds k_rel at the value the networks were fitted at (k_rel reached
only 1.9e-5 and fell back; in ``warm_weak`` 4.8e-5 by step 400). Every parametric run of
pinn_twin_host.py shows the same weights (free drug 1e3 to 9e4). Stage ``warm_parametric_unit``:
``warm_parametric`` with ``TrainingConfig.unknown_weights = "unit"`` (the scalar unknowns follow the
unweighted sum of the loss terms, the networks the balanced one; L-BFGS keeps the weighted loss).
Prediction: k_rel leaves its start upwards as in ``warm_weak`` and ends within 10 % of the truth,
while K_T stays within 10 %; p_e not predicted. Success (issue 9's rule): all three within 5 %.

Ninth post-hoc outcome (one thread, beside pinn_twin_host.py ``--unknown-weights unit``, load
0.6-2.0; 545 s in all: pre-training 72 s, FEM + fit 162 s, training 310 s): **"drifts"**, the
prediction half met: k_rel -9.9 % (warm_parametric: -72 %), p_e -2.0 % (-26 %), but K_T -26 %
(+2.2 %); the pressure 2.1 % from the FEM truth (25 %), drug 12 / 17 / 17 % (23 / 76 / 75 %).
k_rel reached 4.4e-5 by step 500 and stayed near it; K_T rose to 2.45e-14 by step 2000 and stalled.

Tenth post hoc (written after the ninth, committed before its run). The drug network's
tanh(phi/0.05) interface input leaves a margin-band liposomal residual of 28 (mean square) in the
FEM fit (``warm_fit`` ``residual_ms_of_the_fit``) against 0.01-0.04 elsewhere, and the margin is
where K_T acts (advection outward across it); without that input the supervised fit reached
4.7 % instead of 3.1 % after 9000 steps (pinn_twin_host_split.py) with a margin residual of 0.19.
Stage ``warm_parametric_unit_no_tanh``: ``warm_parametric_unit`` with ``interface_width = 0`` (no
tanh input). Prediction: K_T ends closer to the truth than -26 %; k_rel and p_e within 10 %.

Tenth post-hoc outcome (one thread, beside a CI run; 580 s in all, fit 3.7 / 3.5 / 3.8 %):
**diverged**, the prediction missed: k_rel +1312 %, K_T +481 %, p_e -78 %; pressure 74 %, drug
93 / 46 / 52 %. Already by step 500 k_rel was 2.5e-4 and p_e 786 Pa, the same runaway (k_rel and
K_T up, p_e down) as pinn_twin_host.py's held run with unit weights. With unit weights the
unknowns see no data term (the data reach them only through the networks), and the networks,
balanced towards the residuals, follow the unknowns away from the images.

Run from the repository root (merges into benchmarks/results/pinn_twin_host_minimum.json; the
states go to $HOST_MINIMUM_DIR):
    .venv/bin/python benchmarks/pinn_twin_host_minimum.py all        # fit, truth_start, drift, compare
    .venv/bin/python benchmarks/pinn_twin_host_minimum.py STAGE      # one stage (the earlier ones' states)
    .venv/bin/python benchmarks/pinn_twin_host_minimum.py all --smoke   # tiny sizes, writes to the directory
    .venv/bin/python benchmarks/pinn_twin_host_minimum.py frozen       # post hoc (after all)
    .venv/bin/python benchmarks/pinn_twin_host_minimum.py residuals    # post hoc (after fit)
    .venv/bin/python benchmarks/pinn_twin_host_minimum.py weak_terms   # second post hoc (after fit)
    .venv/bin/python benchmarks/pinn_twin_host_minimum.py frozen_weak
    .venv/bin/python benchmarks/pinn_twin_host_minimum.py truth_start_weak
    .venv/bin/python benchmarks/pinn_twin_host_minimum.py truth_start_weak_residuals   # third post hoc
    .venv/bin/python benchmarks/pinn_twin_host_minimum.py warm_weak                    # fourth post hoc
    .venv/bin/python benchmarks/pinn_twin_host_minimum.py truth_start_weak_gauss4
    .venv/bin/python benchmarks/pinn_twin_host_minimum.py warm_weak_w10                # fifth post hoc
    .venv/bin/python benchmarks/pinn_twin_host_minimum.py profile_a                    # sixth post hoc
    .venv/bin/python benchmarks/pinn_twin_host_minimum.py profile_b                    # (beside profile_a)
    .venv/bin/python benchmarks/pinn_twin_host_minimum.py warm_weak_w100               # (beside w10: each
                                                                                       # stage re-reads the JSON)
    .venv/bin/python benchmarks/pinn_twin_host_minimum.py profile_fem_a                # seventh post hoc
    .venv/bin/python benchmarks/pinn_twin_host_minimum.py profile_fem_b                # (beside profile_fem_a)
    .venv/bin/python benchmarks/pinn_twin_host_minimum.py profile_fem_verdict          # (after both)
    .venv/bin/python benchmarks/pinn_twin_host_minimum.py warm_parametric              # eighth post hoc
    .venv/bin/python benchmarks/pinn_twin_host_minimum.py warm_parametric_unit         # ninth post hoc
    .venv/bin/python benchmarks/pinn_twin_host_minimum.py warm_parametric_unit_no_tanh # tenth post hoc
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from mpi4py import MPI

import pinn_twin_host as twin
import pinn_twin_host_diagnosis as diagnosis
from hybrid.commands.invert import with_unknown_values
from hybrid.commands.synthesize import run_synthesize
from hybrid.commands.transport import build_domain, setup_transport
from hybrid.config.synthesize import load_synthesize_config
from hybrid.inverse import Trainer, TrainingConfig
from hybrid.inverse.coupled import TUMOUR_FLOW_UNKNOWNS, pretrain_pressure
from hybrid.inverse.images import pressure_at
from hybrid.inverse.weak import SpaceTimeTestFunctions
from hybrid.io.observations import read_drug_series, read_truth
from hybrid.records import ObservationOperator

DIRECTORY = Path(os.environ.get("HOST_MINIMUM_DIR", "/tmp/pinn_twin_host_minimum"))
RESULTS = twin.HERE / "results" / "pinn_twin_host_minimum.json"
STORED_DRIFT = twin.HERE / "results" / "pinn_twin_host_staged_start_at_truth.json"
NETWORK = {"interface_width": 0.05, "flow_points": 4096}   # width 64, sigma 1: STATE_NETWORK's
TRAINING = {"collocation_points": 512, "dtype": "float32", "seed": 0, "progress_every": 100, "balance": "all",
            "unknown_learning_rate": 3e-3, "lbfgs_resample": False}
WEAK = {"weak_cells": 12, "weak_time_cells": 12, "weak_gauss": 3}   # the library's defaults
QUADRATURE_CHECKS = {"default": {}, "split_2": {"subdivisions": 2}, "cells_16": {"cells": 16}}
SIZES = {   # pre-registered (module doc); smoke: tiny, for a check that the stages run
    "full": {"pressure_fit": (4096, 300, 300), "supervised_steps": 9000, "adam": 1500, "lbfgs": 100,
             "drift_pretrain": (200, 100), "drift_hold": 400, "evaluation_points": 4096, "frozen_iterations": 40,
             "warm_adam": 3000, "profile_adam": 1000, "profile_lbfgs": 50, "profile_cells": (12, 24),
             "parametric_pretrain": (2000, 500)},
    "smoke": {"pressure_fit": (512, 20, 5), "supervised_steps": 30, "adam": 20, "lbfgs": 5,
              "drift_pretrain": (10, 5), "drift_hold": 10, "evaluation_points": 256, "frozen_iterations": 3,
              "warm_adam": 20, "profile_adam": 10, "profile_lbfgs": 2, "profile_cells": (6, 8),
              "parametric_pretrain": (20, 5)},
}
EVALUATION_SEED = 2026
HOLDS, DRIFTS = 0.05, 0.20   # relative error of every / any unknown


class Twin:
    """The twin's FEM truth (synthesized once into ``directory``), its records and truth values."""

    def __init__(self, directory: Path):
        config, self.observation = load_synthesize_config(twin.TOML)
        folder = directory / "synthesize"
        self.config = replace(config, output=replace(config.output, directory=folder))
        if not (folder / "truth.json").exists():
            run_synthesize(self.config, self.observation, MPI.COMM_SELF, twin.quiet)
        parameters = read_truth(folder / "truth.json").parameters
        self.truth = {name: parameters[key][0] for name, (*_, key) in twin.UNKNOWNS.items()}
        operator = ObservationOperator(points_per_axis=self.observation.points_per_axis, dim=2)
        self.records = (read_drug_series(folder / "observations.nii.gz", "total_drug", operator),
                        read_drug_series(folder / "released_fraction.nii.gz", "released_fraction", operator))

    def problem(self, unknowns: dict | None = None):
        """The coupled PINN of the staged runs (seed 0), unknowns at ``unknowns`` [SI] (None: the truth)."""
        return twin.build_problem(self.config, self.records, 0, 256, unknowns or self.truth, **NETWORK)


def results_path(directory: Path) -> Path:
    """Where the stages of ``directory`` merge their entries (the smoke runs' own file)."""
    return RESULTS if directory == DIRECTORY else directory / "smoke.json"


def unknown_values(estimates: dict) -> dict:
    """Problem estimates (names of ``problem.estimates()``) -> twin.UNKNOWNS names [SI]."""
    return {name: estimates[TUMOUR_FLOW_UNKNOWNS.get(name, name)] for name in twin.UNKNOWNS}


def relative_errors(values: dict, truth: dict) -> dict:
    return {name: (values[name] - truth[name]) / truth[name] for name in truth}


def with_unknowns(problem, source):
    """A float64 copy of ``problem`` (networks) with the scalar unknowns of ``source`` (a problem)."""
    out = copy.deepcopy(problem).cpu().double()
    raws = {k: v for k, v in source.state_dict().items() if k.endswith(".raw")}
    out.load_state_dict(raws, strict=False)
    return out


def unweighted_terms(problem, points: int) -> dict:
    """Every unweighted loss term of ``problem`` (float64 copy) on ``points`` uniform drug points and
    the flow's own uniform points, both drawn with EVALUATION_SEED; data, physics and total sums."""
    problem = copy.deepcopy(problem).cpu().double()
    xt = problem.sample_collocation(points, torch.Generator().manual_seed(EVALUATION_SEED))
    terms = {k: float(v.detach()) for k, v in problem.loss_terms(xt).items()}
    data = sum(v for k, v in terms.items() if k.startswith("data"))
    physics = sum(v for k, v in terms.items() if not k.startswith("data"))
    return {"terms": terms, "data_sum": data, "physics_sum": physics, "total": data + physics}


def field_errors(problem, fem: dict) -> dict:
    """Pressure relative L2 at the mesh nodes and drug relative L2 per species at every node every
    600 s, against the FEM truth ``fem`` (saved by the fit stage); vector norms."""
    problem = copy.deepcopy(problem).cpu().double().eval()
    network = pressure_at(problem.flow, fem["pressure_nodes"])
    with torch.no_grad():
        fit = torch.cat(problem.states(fem["xt"]), dim=1)
    drug = (fit - fem["target"]).norm(dim=0) / fem["target"].norm(dim=0)
    return {"pressure": float(np.linalg.norm(network - fem["pressure"]) / np.linalg.norm(fem["pressure"])),
            "drug": dict(zip(("liposomal", "free", "cell"), drug.tolist()))}


def fit_stage(twin_data: Twin, sizes: dict, directory: Path, values: dict | None = None,
              name: str = "fit") -> dict:
    """Pressure and drug networks fitted to the FEM at ``values`` (the three unknowns [SI]; None:
    the truth), unknowns held there (module doc); saves ``name``.pt (state, FEM fields of the
    truth) in ``directory``."""
    values = values or twin_data.truth
    problem = twin_data.problem(values).double()
    for unknown in problem.scalar_unknowns():
        unknown.raw.requires_grad_(False)
    domain = build_domain(twin_data.config, MPI.COMM_SELF, twin.quiet, {})
    start = time.perf_counter()
    setup = setup_transport(with_unknown_values(twin_data.config, values), MPI.COMM_SELF, twin.quiet, {}, domain=domain)
    setup.solver.close()
    initial = {k: v.clone() for k, v in problem.flow.state_dict().items()}
    pressure = diagnosis.pressure_check(problem, setup.pressure, initial, *sizes["pressure_fit"])
    xt, target = diagnosis.fem_node_fields(problem, twin_data.config, domain, values)
    supervised = diagnosis.supervised_fit(problem, xt, target, sizes["supervised_steps"])
    for unknown in problem.scalar_unknowns():
        unknown.raw.requires_grad_(True)
    seconds = time.perf_counter() - start
    if values != twin_data.truth:   # the fields to judge against stay the truth's
        setup = setup_transport(twin_data.config, MPI.COMM_SELF, twin.quiet, {}, domain=domain)
        setup.solver.close()
        xt, target = diagnosis.fem_node_fields(problem, twin_data.config, domain, twin_data.truth)
    fem = {"pressure_nodes": setup.pressure.function_space.tabulate_dof_coordinates(),
           "pressure": setup.pressure.x.array.copy(), "xt": xt, "target": target}
    torch.save({"problem": problem.state_dict(), "fem": fem}, directory / f"{name}.pt")
    return {"values": values, "pressure": pressure, "supervised": supervised, "seconds": seconds}


def truth_fields(twin_data: Twin, problem, domain) -> dict:
    """The FEM truth's IFP at its nodes and drug fields at every node every 600 s (field_errors'
    reference), on ``domain`` (``problem`` gives the nondimensional scales)."""
    setup = setup_transport(twin_data.config, MPI.COMM_SELF, twin.quiet, {}, domain=domain)
    setup.solver.close()
    xt, target = diagnosis.fem_node_fields(problem, twin_data.config, domain, twin_data.truth)
    return {"pressure_nodes": setup.pressure.function_space.tabulate_dof_coordinates(),
            "pressure": setup.pressure.x.array.copy(), "xt": xt, "target": target}


def load_fit(twin_data: Twin, directory: Path, name: str = "fit"):
    """The fitted problem of ``name``.pt (its unknowns) and the FEM truth's fields saved with it."""
    saved = torch.load(directory / f"{name}.pt", weights_only=False)
    problem = twin_data.problem().double()
    problem.load_state_dict(saved["problem"])
    return problem, saved["fem"]


def truth_start_stage(twin_data: Twin, sizes: dict, directory: Path, balance: str = TRAINING["balance"],
                      name: str = "truth_start", extra: dict | None = None, start: str = "fit") -> dict:
    """The fitted state ``start``.pt trained as the inversion with ``balance`` (and ``extra``
    TrainingConfig fields), unknowns released at once (module doc); saves ``name``.pt."""
    problem, fem = load_fit(twin_data, directory, start)
    settings = TRAINING | {"balance": balance} | (extra or {})
    config = TrainingConfig(adam_steps=sizes["adam"], lbfgs_steps=sizes["lbfgs"], unknowns_from_step=0, **settings)
    result = Trainer(problem, config, progress=lambda line: print(name, line, flush=True)).run()
    torch.save(problem.state_dict(), directory / f"{name}.pt")
    return {"settings": {"adam_steps": sizes["adam"], "lbfgs_steps": sizes["lbfgs"], "unknowns_from_step": 0}
            | settings, "seconds": result.seconds, "history": result.history}


def outcome_label(values: dict, truth: dict) -> str:
    """"holds" (every unknown within HOLDS of truth), "drifts" (any beyond DRIFTS) or "mixed"."""
    worst = max(abs(e) for e in relative_errors(values, truth).values())
    return "holds" if worst <= HOLDS else "drifts" if worst > DRIFTS else "mixed"


def state(twin_data: Twin, directory: Path, name: str):
    """The float64 problem with the state ``name``.pt of ``directory``."""
    problem = twin_data.problem().double()
    problem.load_state_dict(torch.load(directory / f"{name}.pt"))
    return problem


def final_values(problem) -> dict:
    return unknown_values({k: v for k, (v, _) in problem.estimates().items()})


def residuals_stage(twin_data: Twin, sizes: dict, directory: Path) -> dict:
    """Post hoc (module doc): truth_start with balance "residuals"; rule, unweighted terms, fields."""
    entry = truth_start_stage(twin_data, sizes, directory, "residuals", "truth_start_residuals")
    problem, fem = state(twin_data, directory, "truth_start_residuals"), load_fit(twin_data, directory)[1]
    values = final_values(problem)
    return entry | {"estimates": values, "relative_errors": relative_errors(values, twin_data.truth),
                    "label": outcome_label(values, twin_data.truth),
                    "unweighted": unweighted_terms(problem, sizes["evaluation_points"]),
                    "fields": field_errors(problem, fem)}


def use_weak(problem, cells: int = WEAK["weak_cells"], subdivisions: int = 1, gauss: int = WEAK["weak_gauss"]):
    """``problem`` (float64) with weak drug residuals on the default test functions, or with
    ``cells`` per space axis, ``gauss`` points per cell axis and cells split into ``subdivisions``
    per axis."""
    problem.use_weak_form(SpaceTimeTestFunctions(problem.geometry, cells=cells, time_cells=WEAK["weak_time_cells"],
                                                 gauss=gauss, subdivisions=subdivisions))
    return problem


def weak_terms_stage(twin_data: Twin, sizes: dict, directory: Path) -> dict:
    """Second post hoc (module doc): E's weak PDE terms, default test functions and two finer rules."""
    out = {"strong": unweighted_terms(load_fit(twin_data, directory)[0], sizes["evaluation_points"])}
    for name, keywords in QUADRATURE_CHECKS.items():
        problem = use_weak(load_fit(twin_data, directory)[0], **keywords)
        out[name] = {"test_functions": len(problem.test_functions),
                     "points": int(problem.test_functions.points.shape[0]),
                     "unweighted": unweighted_terms(problem, sizes["evaluation_points"])}
        print(name, json.dumps(out[name], default=float), flush=True)
    return out


def frozen_weak_stage(twin_data: Twin, sizes: dict, directory: Path) -> dict:
    """Second post hoc (module doc): ``frozen`` with the weak drug terms, E's networks."""
    return frozen_stage(twin_data, sizes, directory, {"E_fitted_start": use_weak(load_fit(twin_data, directory)[0])})


def truth_start_weak_stage(twin_data: Twin, sizes: dict, directory: Path, balance: str = TRAINING["balance"],
                           name: str = "truth_start_weak", against: str = "truth_start", weak: dict | None = None,
                           start: str = "fit", extra: dict | None = None) -> dict:
    """Second post hoc (module doc): ``truth_start`` from ``start``.pt with the weak residual form
    (``weak``: its settings, default WEAK), ``balance`` and ``extra`` TrainingConfig fields (saved as
    ``name``.pt); rule, comparison with the state ``against``."""
    entry = truth_start_stage(twin_data, sizes, directory, balance, name,
                              extra={"residual_form": "weak"} | (weak or WEAK) | (extra or {}), start=start)
    problem, fem = state(twin_data, directory, name), load_fit(twin_data, directory)[1]
    values, other = final_values(problem), final_values(state(twin_data, directory, against))
    errors, other_errors = (relative_errors(v, twin_data.truth) for v in (values, other))
    closer = [abs(errors[unknown]) < abs(other_errors[unknown]) for unknown in errors]
    rule = use_weak(copy.deepcopy(problem), gauss=(weak or WEAK)["weak_gauss"])
    return entry | {"estimates": values, "relative_errors": errors, "label": outcome_label(values, twin_data.truth),
                    "compared_with": against, "compared_relative_errors": other_errors,
                    "comparison": "weak helps" if all(closer) else "weak hurts" if not any(closer)
                    else "no clear change",
                    "unweighted_weak": unweighted_terms(rule, sizes["evaluation_points"]),
                    "fields": field_errors(problem, fem)}


def warm_weak_stage(twin_data: Twin, sizes: dict, directory: Path) -> dict:
    """Fourth post hoc (module doc): FEM warm start at the staged run's start values, then the weak
    training with the staged run's budget."""
    start = {name: spec[3] for name, spec in twin.UNKNOWNS.items()}
    fit = fit_stage(twin_data, sizes, directory, start, "warm")
    budget = sizes | {"adam": sizes["warm_adam"]}
    entry = truth_start_weak_stage(twin_data, budget, directory, name="warm_weak", start="warm")
    return entry | {"warm_fit": fit, "fit_plus_training_s": fit["seconds"] + entry["seconds"]}


def warm_parametric_stage(twin_data: Twin, sizes: dict, directory: Path, name: str = "warm_parametric",
                          unknown_weights: str = "balanced", network: dict | None = None) -> dict:
    """Eighth post hoc (module doc): ``warm_weak`` with a parametric pressure network; ninth:
    with ``unknown_weights`` "unit"; tenth: and ``network`` (build_problem keywords) instead of NETWORK."""
    start = {name: spec[3] for name, spec in twin.UNKNOWNS.items()}
    problem = twin.build_problem(twin_data.config, twin_data.records, 0, 256, start, parametric_pressure=True,
                                 **(network or NETWORK)).double()
    began = time.perf_counter()
    adam, lbfgs = sizes["parametric_pretrain"]
    pretraining = TrainingConfig(adam_steps=adam, lbfgs_steps=lbfgs, unknowns_from_step=0,
                                 **TRAINING | {"collocation_points": NETWORK["flow_points"]})
    pressure = pretrain_pressure(problem, pretraining, lambda line: print(name, "pressure", line, flush=True))
    problem = problem.double()
    pretrain_s = time.perf_counter() - began
    domain = build_domain(twin_data.config, MPI.COMM_SELF, twin.quiet, {})
    xt, target = diagnosis.fem_node_fields(problem, twin_data.config, domain, start)
    supervised = diagnosis.supervised_fit(problem, xt, target, sizes["supervised_steps"])
    warm_s = time.perf_counter() - began
    config = TrainingConfig(adam_steps=sizes["warm_adam"], lbfgs_steps=sizes["lbfgs"], unknowns_from_step=0,
                            unknown_weights=unknown_weights, **TRAINING | {"residual_form": "weak"} | WEAK)
    result = Trainer(problem, config, progress=lambda line: print(name, line, flush=True)).run()
    total_s = time.perf_counter() - began
    fem = truth_fields(twin_data, problem, domain)
    values = final_values(problem)
    return {"estimates": values, "relative_errors": relative_errors(values, twin_data.truth),
            "label": outcome_label(values, twin_data.truth), "fields": field_errors(problem, fem),
            "pressure_pretraining_last": pressure.history[-1], "warm_fit": supervised,
            "seconds": {"pressure_pretraining": pretrain_s, "fem_and_fit": warm_s - pretrain_s,
                        "training": result.seconds, "total": total_s},
            "under_15_minutes": total_s <= 900.0, "history": result.history}


def warm_weighted_stage(twin_data: Twin, sizes: dict, directory: Path, weight: float) -> dict:
    """Fifth post hoc (module doc): warm_weak's training from warm.pt with balance "none" and a fixed
    residual ``weight``."""
    name = f"warm_weak_w{weight:g}"
    entry = truth_start_weak_stage(twin_data, sizes | {"adam": sizes["warm_adam"]}, directory, "none", name,
                                   against="warm_weak", start="warm", extra={"residual_weight": weight})
    return entry | {"conductivity_moves": abs(entry["relative_errors"]["conductivity"]) < 0.5}


def profile_stage(twin_data: Twin, sizes: dict, directory: Path, conductivities: tuple[float, ...]) -> dict:
    """Sixth post hoc (module doc): the networks of warm.pt trained with K_T held at each of
    ``conductivities`` [m^2/(Pa s)], k_rel and p_e at the truth; unweighted terms per point."""
    saved = torch.load(directory / "warm.pt", weights_only=False)["problem"]
    networks = {key: value for key, value in saved.items() if not key.endswith(".raw")}
    out = {}
    for conductivity in conductivities:
        problem = twin_data.problem(twin_data.truth | {"conductivity": conductivity}).double()
        problem.load_state_dict(networks, strict=False)
        label = f"profile K_T {conductivity:.2g}"
        out[f"{conductivity:.2g}"] = train_networks_alone(problem, sizes, label)
    return out


def train_networks_alone(problem, sizes: dict, label: str, cells: int = WEAK["weak_cells"]) -> dict:
    """The profile training of ``problem`` (in place): networks only, unknowns held, weak form with
    ``cells`` test-function cells per axis, balance "none"; its time, unknowns and unweighted terms."""
    for unknown in problem.scalar_unknowns():
        unknown.raw.requires_grad_(False)
    config = TrainingConfig(adam_steps=sizes["profile_adam"], lbfgs_steps=sizes["profile_lbfgs"],
                            **TRAINING | {"balance": "none", "residual_form": "weak"} | WEAK | {"weak_cells": cells})
    result = Trainer(problem, config, progress=lambda line: print(label, line, flush=True)).run()
    entry = {"seconds": result.seconds, "estimates": final_values(problem),
             "unweighted": unweighted_terms(use_weak(copy.deepcopy(problem), cells=cells), sizes["evaluation_points"])}
    print(label, json.dumps(entry["unweighted"], default=float), flush=True)
    return entry


def profile_fem_stage(twin_data: Twin, sizes: dict, directory: Path, conductivities: tuple[float, ...]) -> dict:
    """Seventh post hoc (module doc): at each of ``conductivities`` [m^2/(Pa s)] (k_rel, p_e at the
    truth) the FEM warm start there, then the profile training with each cell count of
    ``sizes["profile_cells"]``; unweighted terms before and after."""
    out = {}
    for conductivity in conductivities:
        key = f"{conductivity:.2g}"
        fit = fit_stage(twin_data, sizes, directory, twin_data.truth | {"conductivity": conductivity},
                        f"profile_fem_{key}")
        fitted = load_fit(twin_data, directory, f"profile_fem_{key}")[0]
        out[key] = {"conductivity": conductivity, "fit": fit}
        for cells in sizes["profile_cells"]:
            before = unweighted_terms(use_weak(copy.deepcopy(fitted), cells=cells), sizes["evaluation_points"])
            trained = train_networks_alone(copy.deepcopy(fitted), sizes, f"profile_fem K_T {key} cells {cells}", cells)
            out[key][f"cells_{cells}"] = {"fitted": before} | trained
    return out


def profile_label(totals: dict, truth_key: str = "3.1e-14", start_key: str = "1e-14") -> str:
    """The sixth / seventh stages' rule on ``totals`` (K_T key -> summed terms)."""
    lowest = min(totals, key=totals.get)
    if lowest == truth_key and totals[start_key] > 1.1 * totals[truth_key]:
        return "identified by the loss"
    return "flat" if max(totals.values()) <= 1.1 * min(totals.values()) else "mixed"


def profile_fem_verdict_stage(twin_data: Twin, sizes: dict, directory: Path) -> dict:
    """Seventh post hoc's decision (module doc) from the stored profile_fem_a / _b entries."""
    results = json.loads(results_path(directory).read_text())
    points = results["profile_fem_a"] | results["profile_fem_b"]
    points = {key: value for key, value in points.items() if isinstance(value, dict) and "fit" in value}
    out = {}
    for cells in sizes["profile_cells"]:
        runs = {key: point[f"cells_{cells}"]["unweighted"] for key, point in points.items()}
        images = {key: sum(v for k, v in run["terms"].items() if k.startswith("data")) for key, run in runs.items()}
        totals = {key: run["total"] for key, run in runs.items()}
        out[f"cells_{cells}"] = {"totals": totals, "image_terms": images, "label": profile_label(totals),
                                 "image_label": profile_label(images)}
    return out


def frozen_stage(twin_data: Twin, sizes: dict, directory: Path, problems: dict | None = None) -> dict:
    """Post hoc (module doc): the unknowns alone minimising the non-data terms, networks frozen
    (``problems`` name -> problem; default E's and A's)."""
    out = {}
    problems = problems or {"E_fitted_start": load_fit(twin_data, directory)[0],
                            "A_truth_start_final": state(twin_data, directory, "truth_start")}
    for name, problem in problems.items():
        for parameter in problem.parameters():
            parameter.requires_grad_(False)
        raws = [u.raw.requires_grad_(True) for u in problem.scalar_unknowns()]
        xt = problem.sample_collocation(sizes["evaluation_points"], torch.Generator().manual_seed(EVALUATION_SEED))
        physics = lambda: sum(v for k, v in problem.loss_terms(xt.clone()).items() if not k.startswith("data"))
        start_values, start_loss = final_values(problem), float(physics().detach())
        optimiser = torch.optim.LBFGS(raws, lr=1.0, max_iter=sizes["frozen_iterations"], history_size=20,
                                      line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)

        def closure():
            optimiser.zero_grad()
            loss = physics()
            loss.backward()
            return loss
        optimiser.step(closure)
        values = final_values(problem)
        out[name] = {"start": start_values, "start_physics_sum": start_loss, "minimiser": values,
                     "relative_errors": relative_errors(values, twin_data.truth),
                     "unweighted": unweighted_terms(problem, sizes["evaluation_points"])}
        print(name, json.dumps(out[name], default=float), flush=True)
    return out


def drift_stage(twin_data: Twin, sizes: dict, directory: Path) -> dict:
    """The staged start-at-truth run of pinn_twin_host.py re-made (module doc); saves drift.pt."""
    problem = twin_data.problem()
    adam, lbfgs = sizes["drift_pretrain"]
    config = TrainingConfig(adam_steps=sizes["adam"], lbfgs_steps=0, unknowns_from_step=sizes["drift_hold"],
                            **TRAINING)
    pretraining = replace(config, adam_steps=adam, lbfgs_steps=lbfgs, collocation_points=NETWORK["flow_points"],
                          unknowns_from_step=0)
    start = time.perf_counter()
    pressure = pretrain_pressure(problem, pretraining, lambda line: print("drift pressure", line, flush=True))
    result = Trainer(problem, config, progress=lambda line: print("drift", line, flush=True)).run()
    torch.save(problem.state_dict(), directory / "drift.pt")
    return {"settings": {"adam_steps": sizes["adam"], "unknowns_from_step": sizes["drift_hold"],
                         "pressure_pretraining": sizes["drift_pretrain"]} | TRAINING,
            "seconds": time.perf_counter() - start, "pressure_pretraining_last": pressure.history[-1],
            "history": result.history}


def compare_stage(twin_data: Twin, sizes: dict, directory: Path) -> dict:
    """Unweighted terms of the states A-E on one set of points, field errors, the decision (module doc)."""
    fitted, fem = load_fit(twin_data, directory)
    truth_start, drift = state(twin_data, directory, "truth_start"), state(twin_data, directory, "drift")
    states = {"A_truth_start_final": truth_start, "B_drift_final": drift,
              "C_truth_start_networks_at_drift_unknowns": with_unknowns(truth_start, drift),
              "D_drift_networks_at_true_unknowns": with_unknowns(drift, fitted), "E_fitted_start": fitted}
    losses = {name: unweighted_terms(problem, sizes["evaluation_points"]) for name, problem in states.items()}
    truth = twin_data.truth
    final = {"A_truth_start_final": final_values(truth_start), "B_drift_final": final_values(drift)}
    errors = {name: relative_errors(values, truth) for name, values in final.items()}
    label = outcome_label(final["A_truth_start_final"], truth)
    lower = losses["A_truth_start_final"]["total"] < losses["B_drift_final"]["total"]
    conclusion = ("path problem" if label == "holds" and lower else
                  "the loss's minimum is not at the truth" if label == "drifts" else "mixed")
    stored = json.loads(STORED_DRIFT.read_text())
    stored_final = unknown_values(stored["history"][-1]["estimates"])
    return {"truth": truth, "estimates": final, "relative_errors": errors, "label": label,
            "truth_start_total_below_drift": lower, "conclusion": conclusion, "unweighted": losses,
            "evaluation": {"drug_points": sizes["evaluation_points"], "flow_points": NETWORK["flow_points"],
                           "seed": EVALUATION_SEED, "dtype": "float64"},
            "fields": {name: field_errors(states[name], fem)
                       for name in ("A_truth_start_final", "B_drift_final", "E_fitted_start")},
            "stored_drift_run": {"file": STORED_DRIFT.name, "estimates": stored_final,
                                 "remade_relative_difference": relative_errors(final["B_drift_final"], stored_final),
                                 "final_terms_on_its_own_points": stored["history"][-1]["terms"]}}


STAGES = ("fit", "truth_start", "drift", "compare")   # pre-registered; "all" runs these
POST_HOC = {"frozen": frozen_stage, "residuals": residuals_stage, "weak_terms": weak_terms_stage,
            "frozen_weak": frozen_weak_stage, "truth_start_weak": truth_start_weak_stage,
            "truth_start_weak_residuals": lambda *arguments: truth_start_weak_stage(
                *arguments, "residuals", "truth_start_weak_residuals", "truth_start_weak"),
            "warm_weak": warm_weak_stage, "warm_parametric": warm_parametric_stage,
            "warm_parametric_unit": lambda *arguments: warm_parametric_stage(*arguments, "warm_parametric_unit", "unit"),
            "warm_parametric_unit_no_tanh": lambda *arguments: warm_parametric_stage(
                *arguments, "warm_parametric_unit_no_tanh", "unit", NETWORK | {"interface_width": 0.0}),
            "profile_a": lambda *arguments: profile_stage(*arguments, (1.0e-14, 3.1e-14)),
            "profile_b": lambda *arguments: profile_stage(*arguments, (1.8e-14, 5.4e-14)),
            "profile_fem_a": lambda *arguments: profile_fem_stage(*arguments, (1.0e-14, 3.1e-14)),
            "profile_fem_b": lambda *arguments: profile_fem_stage(*arguments, (1.8e-14, 5.4e-14)),
            "profile_fem_verdict": profile_fem_verdict_stage,
            "warm_weak_w10": lambda *arguments: warm_weighted_stage(*arguments, 10.0),
            "warm_weak_w100": lambda *arguments: warm_weighted_stage(*arguments, 100.0),
            "truth_start_weak_gauss4": lambda *arguments: truth_start_weak_stage(
                *arguments, name="truth_start_weak_gauss4", against="truth_start_weak", weak=WEAK | {"weak_gauss": 4})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=STAGES + tuple(POST_HOC) + ("all",))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; states and JSON in $HOST_MINIMUM_DIR/smoke")
    args = parser.parse_args()
    torch.set_num_threads(1)
    directory = DIRECTORY / "smoke" if args.smoke else DIRECTORY
    directory.mkdir(parents=True, exist_ok=True)
    output = results_path(directory)
    sizes = SIZES["smoke" if args.smoke else "full"]
    twin_data = Twin(DIRECTORY)   # the FEM twin is the same for both
    for stage in STAGES if args.stage == "all" else (args.stage,):
        load, start = os.getloadavg(), time.perf_counter()
        if stage == "compare":
            entry = compare_stage(twin_data, sizes, directory)
        else:
            entry = ({"fit": fit_stage, "truth_start": truth_start_stage, "drift": drift_stage} | POST_HOC)[stage](
                twin_data, sizes, directory)
        # read again at the end: another stage may have run beside this one and written its entry
        results = (json.loads(output.read_text()) if output.exists() else {}) \
            | {"benchmark": "pinn_twin_host_minimum", "sizes": sizes}
        results[stage] = entry | {"wall_s": time.perf_counter() - start,
                                  "load_average": {"before": load, "after": os.getloadavg()}}
        output.write_text(json.dumps(results, indent=1, default=float) + "\n")
        print(stage, json.dumps({k: v for k, v in entry.items() if k != "history"}, indent=1, default=float),
              flush=True)


if __name__ == "__main__":
    main()
