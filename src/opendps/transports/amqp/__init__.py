"""Device registration over AMQP 1.0 (protocol.md §4): a sans-I/O driver on proton's engine
(driver.py, sasl.py) and a thin asyncio adapter (adapter.py)."""
