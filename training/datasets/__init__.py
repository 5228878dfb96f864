"""Producers of contract datasets: the Online Retail importer and the synthetic returns world."""
