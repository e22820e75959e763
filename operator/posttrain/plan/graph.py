"""The dependency graph of a set of resources: missing references, cycles, and a run order."""

from __future__ import annotations

from dataclasses import dataclass, field

from posttrain.api.references import iter_references, output_name
from posttrain.api.resources import Resource

Key = tuple[str, str]


@dataclass
class Graph:
    """Edges from each resource to the resources it reads from."""

    resources: dict[Key, Resource]
    needs: dict[Key, list[tuple[str, Key, str]]] = field(default_factory=dict)
    """key -> [(field path, referenced key, output name)]"""

    @classmethod
    def build(cls, resources: list[Resource]) -> Graph:
        """Index the resources and their references."""
        graph = cls({r.key: r for r in resources})
        for resource in resources:
            edges: list[tuple[str, Key, str]] = []
            for path, ref in iter_references(resource.spec):
                if ref.from_ is not None:
                    edges.append((path, (str(ref.from_.kind), ref.from_.name), output_name(ref.from_)))
            graph.needs[resource.key] = edges
        return graph

    def missing(self) -> list[str]:
        """Problems: references to resources that are not in the set."""
        out = []
        for key, edges in self.needs.items():
            for path, target, _ in edges:
                if target not in self.resources:
                    out.append(f"{key[0]}/{key[1]}: spec.{path}: {target[0]}/{target[1]} does not exist")
        return out

    def cycle(self) -> list[Key] | None:
        """A reference cycle, as the list of resources in it (the first one again at the end), or None."""
        # Iterative depth-first search: a long curriculum must not hit Python's recursion limit.
        state: dict[Key, int] = {}  # 1: on the current path, 2: fully explored
        for root in self.resources:
            if root in state:
                continue
            path = [root]
            state[root] = 1
            pending = [iter(self.needs.get(root, []))]
            while pending:
                edge = next(pending[-1], None)
                if edge is None:
                    pending.pop()
                    state[path.pop()] = 2
                    continue
                target = edge[1]
                if target not in self.resources:
                    continue
                if state.get(target) == 1:
                    return [*path[path.index(target) :], target]
                if target not in state:
                    state[target] = 1
                    path.append(target)
                    pending.append(iter(self.needs.get(target, [])))
        return None

    def cycle_of(self, key: Key) -> list[Key] | None:
        """A reference cycle through `key` (starting and ending with it), or None if it is in none.

        Drivers use it to tell each resource of every cycle (`Observed.cycle`); resources that only
        read from a cycle are not part of it: they wait for it.
        """
        if key not in self.resources:
            return None
        seen = {key}
        path = [key]
        pending = [iter(self.needs.get(key, []))]
        while pending:
            edge = next(pending[-1], None)
            if edge is None:
                pending.pop()
                path.pop()
                continue
            target = edge[1]
            if target == key:
                return [*path, key]
            # A resource explored once cannot lead back to `key` on a second visit either.
            if target in self.resources and target not in seen:
                seen.add(target)
                path.append(target)
                pending.append(iter(self.needs.get(target, [])))
        return None

    def order(self) -> list[Key]:
        """A dependency order (inputs first), stable with respect to the given order.

        Raises:
            ValueError: if there is a cycle.
        """
        cycle = self.cycle()
        if cycle:
            raise ValueError("reference cycle: " + " -> ".join(f"{k}/{n}" for k, n in cycle))
        done: list[Key] = []
        placed: set[Key] = set()
        for root in self.resources:
            if root in placed:
                continue
            # Post-order without recursion: a resource is placed once everything it reads is placed.
            stack = [(root, iter(self.needs.get(root, [])))]
            while stack:
                key, edges = stack[-1]
                edge = next(edges, None)
                if edge is None:
                    stack.pop()
                    placed.add(key)
                    done.append(key)
                    continue
                target = edge[1]
                if target in self.resources and target not in placed:
                    stack.append((target, iter(self.needs.get(target, []))))
        return done
