"""``laser-blender farm``: many shots, and long shots, across a Ray cluster.

* :mod:`.shots`: the shots to run (videos, image folders, shot list files) and their jobs;
* :mod:`.report`: per-shot results, ``OUT/farm.json`` and the summary table;
* :mod:`.tasks`: what runs on Ray workers (one shot; one window's prediction);
* :mod:`.split`: a long shot's windows predicted by several workers, registered here in order;
* :mod:`.run`: the driver that submits shots, follows their progress and cancels them.

Workers read footage and write run directories on a shared filesystem: every path is the
same on every node. Ray is imported only by :mod:`.tasks`, :mod:`.split` and :mod:`.run`
(the optional ``farm`` extra).
"""
