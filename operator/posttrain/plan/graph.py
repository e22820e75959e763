"""The dependency graph of a set of resources: missing references, cycles, and a run order."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from posttrain.api.outputs import unknown_output
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

    def unknown_outputs(self) -> list[str]:
        """Problems: references to an output the referenced resource does not produce.

        Each names the valid outputs, known from the referenced resource's spec.
        """
        out = []
        for key, edges in self.needs.items():
            for path, target, output in edges:
                producer = self.resources.get(target)
                problem = None if producer is None else unknown_output(target, output, producer.spec)
                if problem is not None:
                    out.append(f"{key[0]}/{key[1]}: spec.{path}: {problem}")
        return out

    def problems(self) -> list[str]:
        """Missing references, unknown outputs, then every reference cycle."""
        cycles = (describe_cycle(cycle) for cycle in self.cycles())
        return [*self.missing(), *self.unknown_outputs(), *cycles]

    def cycle(self) -> list[Key] | None:
        """The first reference cycle (the first one again at the end), or None."""
        return next(iter(self.cycles()), None)

    def refs_of(self, key: Key) -> list[Key]:
        """The resources `key` reads from, in reference order (also those not in the set)."""
        return [target for _, target, _ in self.needs.get(key, [])]

    def cycle_of(self, key: Key) -> list[Key] | None:
        """A reference cycle through `key` (starting and ending with it), or None if it is in none.

        Drivers use it to tell each resource of every cycle (`Observed.cycle`); resources that only
        read from a cycle are not part of it: they wait for it.
        """
        if key not in self.resources:
            return None
        return cycle_through(key, self.refs_of)

    def cycles(self) -> list[list[Key]]:
        """Every reference cycle once (each from its first resource in the given order)."""
        found: list[list[Key]] = []
        members: set[Key] = set()
        for key in self.resources:
            cycle = None if key in members else self.cycle_of(key)
            if cycle is not None and not members.intersection(cycle):
                found.append(cycle)
            members.update(cycle or [])
        return found

    def order(self) -> list[Key]:
        """A dependency order (inputs first), stable with respect to the given order.

        Raises:
            ValueError: if there is a cycle.
        """
        cycle = self.cycle()
        if cycle:
            raise ValueError(describe_cycle(cycle))
        return self.run_order()

    def run_order(self) -> list[Key]:
        """A dependency order of everything outside cycles; resources of a cycle where they are met.

        Stable with respect to the given order. A pipeline with a cycle still runs its acyclic part in
        dependency order (the resources of a cycle only wait).
        """
        done: list[Key] = []
        placed: set[Key] = set()
        for root in self.resources:
            if root in placed:
                continue
            # Post-order without recursion: a resource is placed once everything it reads is placed.
            stack = [(root, iter(self.refs_of(root)))]
            on_path = {root}
            while stack:
                key, edges = stack[-1]
                target = next(edges, None)
                if target is None:
                    stack.pop()
                    on_path.discard(key)
                    placed.add(key)
                    done.append(key)
                    continue
                if target in self.resources and target not in placed and target not in on_path:
                    stack.append((target, iter(self.refs_of(target))))
                    on_path.add(target)
        return done


def cycle_through(key: Key, refs_of: Callable[[Key], Iterable[Key]]) -> list[Key] | None:
    """A reference cycle through `key` (starting and ending with it), or None if it is in none.

    The one cycle search of both drivers (the local runner feeds it from its `Graph`, the operator
    from its index). Depth first in reference order, without recursion (a long curriculum must not
    hit Python's recursion limit).

    Args:
        key: the resource.
        refs_of: what each resource reads from (nothing for a resource that does not exist).

    Returns:
        The resources of the first cycle found through `key`, `key` first and last, or None.
    """
    seen = {key}
    path = [key]
    pending = [iter(refs_of(key))]
    while pending:
        target = next(pending[-1], None)
        if target is None:
            pending.pop()
            path.pop()
            continue
        if target == key:
            return [*path, key]
        # A resource explored once cannot lead back to `key` on a second visit either.
        if target not in seen:
            seen.add(target)
            path.append(target)
            pending.append(iter(refs_of(target)))
    return None


def describe_cycle(cycle: list[Key]) -> str:
    """`reference cycle: Kind/a -> Kind/b -> Kind/a`."""
    return "reference cycle: " + " -> ".join(f"{kind}/{name}" for kind, name in cycle)
