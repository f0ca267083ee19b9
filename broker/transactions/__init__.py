"""The transaction coordinator (docs/transactions.md): state machine in state.py, records of
__transaction_state in state_log.py, the trio side in coordinator.py."""
