"""Exchange emulator: a seeded market behind Binance's public spot API, on loopback."""
