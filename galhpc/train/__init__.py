"""Training: the loop, its checkpoints and losses, the s3VDC schedule and the data-parallel backends.

trainer.py       the loop (`train`, `Trainer`), the run's output lock, `galhpc-train`'s body
state.py         checkpoint payload, position, per-step seeds and RNG states (exact resume)
losses.py        loss terms of each step, their NaN check, means over ranks, losses.csv
inputs.py        the training store checked against the model before the first step
schedule.py      the s3VDC phases and loss weights, the learning-rate decay
distributed.py   backends: start the communication, wrap model and optimizer; `backend.world`
                 is the process group (galhpc.runtime.world.World)
horovod_gloo.py  Horovod's gloo rendezvous under launchers without horovodrun
rendezvous.py    the network interface towards the job's hosts
preemption.py    the stop marker for job scripts
arrays.py        a small single-process loop over in-memory arrays (benchmarks, tests)
"""
