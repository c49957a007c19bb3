"""The accuracy track: LRA tasks and long byte sequences, trained with any registered torch attention.

Layout: ``tasks/`` (one module per task: loader + generator, and the task table),
``model.py`` (encoder classifier), ``train.py`` (training loop), ``training_presets.py``
(settings as data), ``training_run.py`` (one task x implementation -> one AccuracyRecord),
``tune.py`` (grid search on validation only, the test split read once), ``distributed.py``
(training on several processes with torch.distributed: launcher variables, rank shares).
"""
