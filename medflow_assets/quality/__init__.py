"""Data quality: Pandera schemas per table, the factory that turns them into asset checks, the
quarantine-rate gate and the data-quality scorecard."""
