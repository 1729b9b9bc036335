"""The campus food-ordering system under study: three services that talk only through events."""
