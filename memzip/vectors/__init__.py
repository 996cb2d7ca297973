"""Memory vectors (``--vectors full|compact``): the research setting, never imported by the default path.

* ``codes``: how a window's vector is parameterized, quantized, stored and rebuilt (``VectorCode``);
* ``optimizer``: optimizing one vector per window with the float model frozen (one Adam, row-wise);
* ``greedy``: greedy replays on the exact engine (ranks, leads: is a vector accepted?);
* ``results``: what optimizing a window came to (torch-free);
* ``journal``: finished windows of an interrupted compression, resumed by the next run (torch-free);
* ``memory_vectors``, ``vectors_by_size``: the two storage strategies (memzip/strategies/) that use them.
"""
