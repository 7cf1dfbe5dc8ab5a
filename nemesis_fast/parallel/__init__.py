"""Running on several processes (torchrun): the processes and their threads (:mod:`.workers`), the schedule of
who trains which model (:mod:`.schedule`), moving weights between processes (:mod:`.exchange`), and the training
of a set of models shared out among the processes (:mod:`.executor`)."""

from .executor import ModelStore, Trained, train_models
from .schedule import Job, Plan, plan, share_out, training_cost
from .workers import Workers, auto_threads, resolve_device, set_threads, start, stop

__all__ = [
    "Job",
    "ModelStore",
    "Plan",
    "Trained",
    "Workers",
    "auto_threads",
    "plan",
    "resolve_device",
    "set_threads",
    "share_out",
    "start",
    "stop",
    "train_models",
    "training_cost",
]
