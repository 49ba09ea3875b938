"""``omnishift run``: the whole study (data -> importance -> training -> analysis -> evaluation -> report)
as resumable stages; see :mod:`.config` for the experiment YAML and :mod:`.runner` for resumption."""
