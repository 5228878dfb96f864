"""The returns system hears back: outcomes in force, inspections, appeals, shopper messages, signed webhooks."""
