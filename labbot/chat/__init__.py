"""One conversation turn: the engine, its history, the usage ledger and their stores."""
