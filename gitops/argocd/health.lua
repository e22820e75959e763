-- Argo CD health of a posttrain resource (DataSlice, EvolJob, AlignRound, RewardModel, TrainStage).
-- All five kinds share one status contract (DESIGN.md): status.phase, status.observedGeneration and
-- the conditions Ready, InputsReady and Progressing. Argo CD runs this with the object as `obj`
-- (Lua 5.1) and expects a table {status = Healthy | Progressing | Degraded, message = text}.

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
if status == nil or status.phase == nil then
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
local phase = status.phase

if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = message_of(ready, "Succeeded")
  return hs
end

if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = message_of(ready, "Failed")
  return hs
end

if phase == "Waiting" then
  -- Waiting for inputs that are still on their way is progress; an input that failed, a reference
  -- cycle or a missing input or output will not resolve by itself.
  if inputs ~= nil and inputs.status == "False" and inputs.reason ~= "InputNotReady" then
    hs.status = "Degraded"
  elseif ready ~= nil and ready.status == "False" then
    hs.status = "Degraded"
  else
    hs.status = "Progressing"
  end
  hs.message = message_of(inputs, "Waiting for inputs")
  return hs
end

-- Pending or Running (including backing off before a retry).
hs.status = "Progressing"
hs.message = message_of(progressing, phase)
if status.progress ~= nil and status.progress.summary ~= nil and status.progress.summary ~= "" then
  hs.message = hs.message .. " (" .. status.progress.summary .. ")"
end
return hs
