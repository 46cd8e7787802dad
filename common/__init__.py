"""Code shared by the prunus client, server and simulations."""
