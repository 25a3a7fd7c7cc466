"""The BasicSR platform: what every BasicSR model gets from this package, distillation or not.

BasicSR 1.4.2 made to run on current torch, torchvision and numpy (:mod:`.compat`), and the training behaviour a long
real run needs, applied to BasicSR's own classes by :mod:`.patches` (the one list of changes, each with why): safe
options (:mod:`.options`), atomic checkpoints and resume (:mod:`.checkpoint`), any torch optimiser (:mod:`.optim`),
Restormer's schedule (:mod:`.lr_scheduler`), progressive patches (:mod:`.progressive`), mixing (:mod:`.mixing`),
gradient accumulation (:mod:`.accumulation`), both attached by :mod:`.training_batch`, validation at any input size
(:mod:`.padded_test`) and dataset checks (:mod:`.data.preflight`). Beside them: what a network needs of its input
(:mod:`.network_spec`), the Restormer architecture (:mod:`.archs`) and the datasets BasicSR lacks (:mod:`.data`).
Nothing here knows of distillation.
"""
