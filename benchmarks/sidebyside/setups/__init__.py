"""pytest plugins, one per setup, loaded into the generated suite with ``-p``.

Each defines the ``db`` fixture (an ``AsyncSession``) the generated tests ask for; ``timing``
records per-test and per-fixture durations for the phase breakdown.
"""
