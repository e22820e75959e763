-- Argo CD health of a posttrain resource (DataSlice, EvolJob, AlignRound, RewardModel, TrainStage,
-- Curriculum). All kinds share one status contract (DESIGN.md): status.phase, status.observedGeneration and
-- the conditions Ready, InputsReady, Progressing, and kstatus' Stalled (True: it cannot finish without
-- a change) and Reconciling. Argo CD runs this with the object as `obj` (Lua 5.1) and expects a table
-- {status = Healthy | Progressing | Degraded, message = text}.

local hs = {}

local function condition(status, wanted)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

local function message_of(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local status = obj.status
-- The CRD's default status of a new object is {phase: Pending, observedGeneration: 0}.
if status == nil or status.phase == nil or status.observedGeneration == nil or status.observedGeneration == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the posttrain operator to pick the resource up"
  return hs
end

-- A status written for an older spec says nothing about the current one.
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready = condition(status, "Ready")
local inputs = condition(status, "InputsReady")
local progressing = condition(status, "Progressing")
local stalled = condition(status, "Stalled")
local phase = status.phase

if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = message_of(ready, "Succeeded")
  return hs
end

-- Failed after its retries, an invalid spec, or blocked by a failed or missing input anywhere upstream
-- or a reference cycle: nothing changes until someone edits a spec.
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = message_of(stalled, phase)
  return hs
end

if phase == "Failed" then  -- Stalled says so too; a Failed phase alone is enough
  hs.status = "Degraded"
  hs.message = message_of(ready, "Failed")
  return hs
end

if phase == "Waiting" then
  -- For inputs that are on their way (a blocked input made it Stalled above).
  hs.status = "Progressing"
  hs.message = message_of(inputs, "Waiting for inputs")
  return hs
end

-- Running (starting teachers, running the workload, or backing off before a retry; a Curriculum's
-- stage k/N at work, its Progressing message naming the stage and the child it waits for).
hs.status = "Progressing"
hs.message = message_of(progressing, phase)
if status.progress ~= nil and status.progress.summary ~= nil and status.progress.summary ~= "" then
  hs.message = hs.message .. " (" .. status.progress.summary .. ")"
end
return hs
