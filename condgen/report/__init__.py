"""`condgen report`: every model measured the same way, one table and one set of figures for all of them."""
