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
        """A reference cycle, as the list of resources in it, or None."""
        state: dict[Key, int] = {}
        stack: list[Key] = []

        def visit(key: Key) -> list[Key] | None:
            state[key] = 1
            stack.append(key)
            for _, target, _ in self.needs.get(key, []):
                if target not in self.resources:
                    continue
                if state.get(target) == 1:
                    return [*stack[stack.index(target) :], target]
                if state.get(target) is None:
                    found = visit(target)
                    if found:
                        return found
            stack.pop()
            state[key] = 2
            return None

        for key in self.resources:
            if key not in state:
                found = visit(key)
                if found:
                    return found
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

        def place(key: Key) -> None:
            if key in placed:
                return
            for _, target, _ in self.needs.get(key, []):
                if target in self.resources:
                    place(target)
            placed.add(key)
            done.append(key)

        for key in self.resources:
            place(key)
        return done
